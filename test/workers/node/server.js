'use strict';
// HTTP test worker for baton on Node 20, no npm packages.
//
//   /usr/bin/node DIR/server.js
//   /usr/bin/python3 DIR/notify_exec.py /usr/bin/node DIR/server.js   (preferred)
//
// Listener: server.listen({fd: 3}). Like sd_listen_fds(), it first checks
// LISTEN_PID == process.pid and LISTEN_FDS >= 1, and exits 3 otherwise.
//
// READY=1: Node has no AF_UNIX datagram sockets, so it cannot sendto()
// $NOTIFY_SOCKET itself. Two ways, tried in this order, both sent once the
// server is listening:
//  1. $NOTIFY_FD, set by notify_exec.py: a datagram socket already connected
//     to $NOTIFY_SOCKET, inherited across exec (same pid). Node write()s
//     "READY=1" to it with fs.writeSync, so the message carries Node's own pid.
//  2. Otherwise a helper child, `/usr/bin/python3 -c ...`, sends it. The
//     message then carries the helper's pid, which baton attributes to this
//     worker through the process group; so the helper stays alive (blocked
//     on its stdin) until Node exits, and the pid can still be looked up.
//
// Drain on SIGTERM (or SIGINT): Node 19+ http.Server.close() also calls
// closeIdleConnections(), which drops idle keep-alive sockets and sockets just
// accepted whose request is not parsed yet (clients see EOF with no bytes).
// So: close only the listening handle (net.Server.prototype.close), answer
// every request still arriving on open connections with "Connection: close"
// for WORKER_GRACE_MS (default 500), then close the idle connections, let the
// active ones finish, and exit 0 (forced after 5 s more).
// WORKER_DRAIN=naive does what most Node servers do instead: server.close()
// at once (the control for baton's steer mode, which makes it lose nothing).
//
// Protocol (the same for every worker under test/workers):
//   GET any path -> 200
//     X-Baton-Generation: $BATON_GENERATION
//     X-Baton-Worker:     $BATON_WORKER
//     X-Baton-Pid:        pid of the process that answered
//     X-Worker-Kind:      node
//     X-Local-Addr:       local address of the accepted connection
//     body: "hello from generation G worker W pid P kind node local A\n"
//   ?sleep=MS delays the answer by MS milliseconds (an in-flight request).

const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const { spawn } = require('node:child_process');

const KIND = 'node';
const GEN = process.env.BATON_GENERATION || '';
const WORKER = process.env.BATON_WORKER || '';
const PID = String(process.pid);
const GRACE_MS = Number.parseInt(process.env.WORKER_GRACE_MS || '500', 10);

function log(msg) {
  process.stderr.write(`node-worker: pid ${PID} gen ${GEN}: ${msg}\n`);
}

// --- the listener (sd_listen_fds semantics) ---
const listenPid = process.env.LISTEN_PID || '';
const listenFds = process.env.LISTEN_FDS || '';
if (listenPid !== PID || !/^[1-9][0-9]*$/.test(listenFds)) {
  log(`no listener from socket activation (LISTEN_PID=${JSON.stringify(listenPid)}, ` +
      `our pid ${PID}, LISTEN_FDS=${JSON.stringify(listenFds)}); exiting 3`);
  process.exit(3);
}
// Not for children (the READY helper).
delete process.env.LISTEN_PID;
delete process.env.LISTEN_FDS;
delete process.env.LISTEN_FDNAMES;

// --- READY=1 ---
const HELPER = `
import os, socket, sys
os.closerange(3, 65536)
a = os.environ["NOTIFY_SOCKET"]
if a.startswith("@"):
    a = "\\0" + a[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    s.connect(a)
    s.send(b"READY=1")
except OSError as e:
    sys.stderr.write("node-worker READY helper: %s\\n" % e)
    sys.exit(1)
s.close()
sys.stdin.buffer.read()  # linger until Node exits: baton maps our pid to its group
`;

function notifyReady() {
  const fdEnv = process.env.NOTIFY_FD;
  if (fdEnv) {
    delete process.env.NOTIFY_FD;
    const fd = Number.parseInt(fdEnv, 10);
    try {
      fs.writeSync(fd, 'READY=1');
      fs.closeSync(fd);
      log('READY=1 sent through NOTIFY_FD');
      return;
    } catch (e) {
      log(`READY=1 through NOTIFY_FD=${fdEnv} failed (${e.message}), trying the helper`);
    }
  }
  if (!process.env.NOTIFY_SOCKET) {
    log('NOTIFY_SOCKET not set, READY=1 not sent');
    return;
  }
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const child = spawn(python, ['-c', HELPER], {
    stdio: ['pipe', 'ignore', 'inherit'],
    env: { NOTIFY_SOCKET: process.env.NOTIFY_SOCKET, PATH: process.env.PATH || '/usr/bin:/bin' },
  });
  child.on('error', (e) => log(`READY helper failed to start: ${e.message}`));
  child.on('exit', (code) => {
    if (code !== null && code !== 0) log(`READY helper exited ${code}`);
  });
  child.stdin.on('error', () => {});
  // Neither the helper nor its pipe may keep Node alive.
  child.unref();
  child.stdin.unref();
  log('READY=1 sent through a helper process');
}

// --- HTTP ---
let draining = false;

function localAddr(sock) {
  if (sock && sock.localAddress) {
    const h = sock.localAddress;
    return h.includes(':') ? `[${h}]:${sock.localPort}` : `${h}:${sock.localPort}`;
  }
  const a = server.address();
  return typeof a === 'string' ? a : '';
}

const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  const ms = Number.parseInt(u.searchParams.get('sleep') || '0', 10);
  const answer = () => {
    const local = localAddr(req.socket);
    const body = `hello from generation ${GEN} worker ${WORKER} pid ${PID} kind ${KIND} local ${local}\n`;
    const headers = {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'X-Baton-Generation': GEN,
      'X-Baton-Worker': WORKER,
      'X-Baton-Pid': PID,
      'X-Worker-Kind': KIND,
      'X-Local-Addr': local,
    };
    // Decided when the answer is written, so a request in flight at SIGTERM
    // gets it too; Node then closes the socket after the response.
    if (draining) headers.Connection = 'close';
    res.writeHead(200, headers);
    res.end(body);
  };
  if (ms > 0) setTimeout(answer, ms);
  else answer();
});

server.on('error', (e) => {
  log(`listen on fd 3 failed: ${e.message}`);
  process.exit(1);
});

// WORKER_BOOT_DELAY_MS delays listen and READY=1 for generations after the
// first: a slow new generation, during which the old one must keep answering.
const BOOT_DELAY_MS = GEN !== '1' ? Number.parseInt(process.env.WORKER_BOOT_DELAY_MS || '0', 10) : 0;
setTimeout(() => {
  server.listen({ fd: 3 }, () => {
    log(`listening on fd 3 (${JSON.stringify(server.address())})`);
    notifyReady();
  });
}, BOOT_DELAY_MS);

function drain(sig) {
  if (draining) return;
  draining = true;
  if (process.env.WORKER_DRAIN === 'naive') {
    log(`${sig}, server.close() at once`);
    server.close(() => process.exit(0));
    return;
  }
  log(`${sig}, draining for ${GRACE_MS} ms`);
  // Stop accepting without http.Server.close(): see the top of this file.
  // The callback runs once every connection has ended.
  net.Server.prototype.close.call(server, () => {
    log('drained, exiting 0');
    process.exit(0);
  });
  setTimeout(() => {
    server.closeIdleConnections();
    setTimeout(() => {
      log('connections still open 5 s after the grace period, closing them');
      server.closeAllConnections();
      process.exit(0);
    }, 5000).unref();
  }, GRACE_MS);
}

process.on('SIGTERM', () => drain('SIGTERM'));
process.on('SIGINT', () => drain('SIGINT'));
