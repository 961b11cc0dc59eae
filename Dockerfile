# A cairn member in an image of its own binary and nothing else.
# Build context: the repository root. No base image is pulled: the binary is
# built by the host's Go toolchain first (make build, or the container tests),
# static, with CGO_ENABLED=0.
FROM scratch
COPY bin/cairn /cairn
EXPOSE 2379 2380
ENTRYPOINT ["/cairn"]
