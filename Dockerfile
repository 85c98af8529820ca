# The builder image: buildkitd (from the BuildKit release image apple's builder uses)
# with builder-shim beside it, its N-API addons (vsock, fsutil) compiled for the image's architecture.
ARG BUILDKIT_IMAGE=docker.io/moby/buildkit:v0.26.2

FROM docker.io/library/node:20-alpine AS build
RUN apk add --no-cache build-base linux-headers bash
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/build-native.sh ./scripts/
COPY native ./native
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM ${BUILDKIT_IMAGE}
RUN apk add --no-cache nodejs
COPY --from=build /src/dist /opt/builder-shim/dist
COPY --from=build /src/build/native /opt/builder-shim/build/native
COPY --from=build /src/node_modules /opt/builder-shim/node_modules
COPY --from=build /src/package.json /opt/builder-shim/package.json
COPY bin/builder-shim /opt/builder-shim/bin/builder-shim
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
VOLUME /var/lib/buildkit
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
