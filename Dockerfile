# syntax=docker/dockerfile:1
#
# rowcast image, built with a Go toolchain image, for builders that cannot
# run build/image.sh. CI builds and tests the image with build/image.sh
# ("make image", podman, offline); prefer that one. Both produce the same
# image: below "FROM scratch" this file must match build/Containerfile
# instruction for instruction, except the COPY (integration/image_test.go
# checks it).
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t rowcast:local .
#   docker run --rm --network host -e DATABASE_URL=... rowcast:local setup
#   docker run --rm -e DATABASE_URL=... -e JWT_SECRET=... -p 8080:8080 rowcast:local
#
# The entrypoint is the rowcast binary; the command defaults to "serve"
# ("setup", "teardown --yes", "healthcheck" and "version" work the same way).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that editing the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# The same root file system as build/image.sh prepares: the static binary,
# passwd and group from build/rootfs, the CA bundle of the build image.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /rootfs/rowcast ./cmd/rowcast \
    && chmod 0755 /rootfs/rowcast \
    && install -D -m 0644 build/rootfs/etc/passwd /rootfs/etc/passwd \
    && install -D -m 0644 build/rootfs/etc/group /rootfs/etc/group \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="rowcast" \
      org.opencontainers.image.description="PostgreSQL row changes pushed to dashboards over WebSocket, SSE and Socket.IO" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532
ENV ROWCAST_LISTEN=:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/rowcast", "healthcheck"]
ENTRYPOINT ["/rowcast"]
CMD ["serve"]
