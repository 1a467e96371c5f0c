# syntax=docker/dockerfile:1
#
# rowcast image: a static Go binary on a small Alpine base, run as a
# non-root user.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t rowcast .
#   docker run --rm -e DATABASE_URL=... rowcast setup
#   docker run --rm -e DATABASE_URL=... -e JWT_SECRET=... -p 8080:8080 rowcast
#
# The entrypoint is the rowcast binary; the command defaults to "serve"
# ("setup", "teardown --yes" and "version" work the same way).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that editing the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/rowcast ./cmd/rowcast

# Final stage: Alpine rather than distroless/static or scratch. The binary
# needs nothing from it (it is static), but a container health check needs
# an HTTP client: distroless has no shell and no wget/curl, so its health
# check would need a command in rowcast itself. Alpine brings BusyBox wget
# (used by the health check in compose.yaml), CA certificates for
# sslmode=verify-full connections to managed PostgreSQL, and a shell for
# debugging, in about 8 MB.
FROM alpine:3.21
RUN apk add --no-cache ca-certificates \
    && addgroup -S -g 10001 rowcast \
    && adduser -S -D -H -u 10001 -G rowcast -s /sbin/nologin rowcast
COPY --from=build /out/rowcast /usr/local/bin/rowcast
USER 10001:10001
ENV ROWCAST_LISTEN=:8080
EXPOSE 8080
# Health: GET /readyz answers 200 only while capture is connected, /healthz
# while the process is up. Orchestrators define their own probes; see the
# rowcast service in compose.yaml for a Docker health check.
ENTRYPOINT ["rowcast"]
CMD ["serve"]
