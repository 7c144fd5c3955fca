# baton: a container init (PID 1) that reaps, forwards signals, supervises
# workers, and reloads them with zero downtime on SIGHUP.
#
#   docker build -t baton .
#   docker run --rm -p 8080:8080 --name baton-demo baton   # serves the demo worker
#   curl -si http://127.0.0.1:8080/                         # X-Baton-Generation: 1
#   docker kill -s HUP baton-demo                           # reload: generation 2, no request lost
#
# Plain Dockerfile syntax (no BuildKit-only features), so the legacy builder
# builds it too.

# ---- build stage: the Go toolchain. Nothing of it reaches the final image.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, in a layer of their own: source edits do not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: a static binary, which FROM scratch needs (it has no libc).
# -trimpath: no build-machine paths in the binary (reproducible builds).
# -ldflags='-s -w': no symbol table or DWARF, a smaller binary (panics still
# print their stack traces).
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /baton .

# ---- final stage: baton alone, no shell, no libc, no package manager.
FROM scratch
COPY --from=build /baton /baton
# The demo listener. baton opens it once and hands the same socket to every
# worker generation (fd 3, LISTEN_FDS=1), so a reload never closes it.
# Override with -e BATON_LISTEN=...; see `baton help` for every BATON_* variable.
ENV BATON_LISTEN=0.0.0.0:8080
# Documentation only: `docker run -p 8080:8080` still has to publish it.
EXPOSE 8080
# docker stop sends this, then SIGKILL after its timeout (10 s by default).
# SIGTERM is docker's default too; stated here because baton depends on it:
# TERM means "drain the workers and exit", within BATON_STOP_TIMEOUT (8 s by
# default), which fits docker stop's 10 s. SIGHUP is not a stop signal: it is
# baton's reload signal.
STOPSIGNAL SIGTERM
# Exec form, so no shell is needed (scratch has none). `baton health` exits 0
# when baton reports ready and 1 when not (still starting, or shutting down),
# with or without BATON_HTTP_ADDR.
HEALTHCHECK --interval=5s --timeout=3s CMD ["/baton","health"]
# Exec form: the kernel runs /baton as the container's PID 1 and docker's
# signals reach it directly. The shell form (ENTRYPOINT /baton) would make
# /bin/sh PID 1 (and fail here: scratch has no /bin/sh), and sh does not
# forward SIGTERM or reap zombies.
ENTRYPOINT ["/baton"]
# What baton supervises: the built-in demo worker, a correct draining HTTP
# server that speaks LISTEN_FDS and READY=1. `docker run IMAGE /app/server`
# replaces it; a first argument that is a baton subcommand (reload, health,
# version, help, demo) runs that subcommand instead; `--` forces a command.
CMD ["/baton","hello"]
