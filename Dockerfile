# pier's container image: `docker build -t pier .`
#
#   docker run -d --name pier --restart unless-stopped \
#     -v pier-state:/var/lib/pier \
#     -v /etc/pier:/etc/pier:ro \
#     --env-file /etc/pier/pier.env \
#     -p 7878:7878 \
#     pier daemon --repo git@example.com:team/app.git --branch main
#
# The state (pier.db, the fetch cache) lives in the volume; keys and tokens
# come from the env file or from files under /etc/pier named by it
# (PIER_GIT_SSH_KEY, PIER_AGE_KEY_FILE, PIER_TLS_*). The image has no
# shell and no ssh client: nodes are reached over tcp:// (with TLS), and
# git remotes over https:// or ssh:// (libgit2's own ssh).

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && contrib/image-root target/release/pier /out

FROM scratch
COPY --from=build /out/root/ /
COPY --chown=10001:10001 --from=build /out/state/ /var/lib/pier/
ENV PIER_STATE_DIR=/var/lib/pier \
    PIER_CACHE_DIR=/var/lib/pier/cache \
    PIER_LISTEN=0.0.0.0:7878 \
    HOME=/var/lib/pier \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
VOLUME /var/lib/pier
EXPOSE 7878
ENTRYPOINT ["/usr/local/bin/pier"]
CMD ["daemon"]
