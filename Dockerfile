# A cairn member in an image of its own binary and nothing else.
# Build context: the repository root. No base image is pulled: the binary is
# built by the host's Go toolchain first, static, with CGO_ENABLED=0 (make
# image runs make build first; the container tests build it themselves).
FROM scratch
COPY bin/cairn /cairn
EXPOSE 2379 2380
ENTRYPOINT ["/cairn"]
