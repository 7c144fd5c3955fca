// The "seed" design that bench/reload/run measures against baton: a Node 20
// cluster master, written the way such a reload usually is. No npm packages.
//
//   PORT=8080 WORKERS=2 node master.js
//
// On SIGHUP the master forks a new generation of WORKERS workers, waits for
// each one's 'listening' event, then SIGTERMs the old workers. A worker is a
// plain http server; on SIGTERM it calls server.close() and exits when the
// close completes (bounded by 5 s). Cluster scheduling is Node's default on
// Linux (round-robin: the master accepts and hands connections to workers).
// This is the design that loses requests: the old worker's server.close()
// (Node 19+) closes its idle keep-alive sockets at once, and connections the
// master has already handed to it can arrive after it stopped listening.
//
// The master logs the JSON lines the benchmark driver reads, on stderr:
// "generation ready" {gen, elapsed}, "swap begun" {gen}, "swap complete"
// {gen, elapsed}, "worker exited" {gen, worker, pid, code}; elapsed in ms.
// A SIGHUP during a swap is coalesced into one more swap after it. SIGTERM
// or SIGINT: SIGTERM every worker, exit when they are gone (SIGKILL at 10 s).
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const PORT = Number(process.env.PORT);
const HOST = process.env.HOST || '127.0.0.1';

function log(message, fields) {
  process.stderr.write(JSON.stringify({ message, ...fields, time: new Date().toISOString() }) + '\n');
}
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

if (cluster.isPrimary) {
  const WORKERS = Number(process.env.WORKERS || 2);
  if (!(PORT > 0) || !(WORKERS > 0)) {
    process.stderr.write('usage: PORT=N [WORKERS=N] node master.js\n');
    process.exit(2);
  }
  let gen = 0;
  let current = null; // { gen, workers }
  let swapping = false;
  let queued = false;
  let stopping = false;

  const startGen = (onReady) => {
    const g = ++gen;
    const t0 = process.hrtime.bigint();
    const workers = [];
    let listening = 0;
    let failed = false;
    for (let i = 0; i < WORKERS; i++) {
      const w = cluster.fork({ GEN: String(g), WORKER: String(i) });
      w.on('exit', (code, signal) => {
        log('worker exited', { gen: g, worker: i, pid: w.process.pid, code: signal ? signal : code });
        if (listening < WORKERS && !failed) {
          failed = true;
          onReady(null, g, ms(t0));
        }
      });
      w.once('listening', () => {
        if (++listening === WORKERS && !failed) onReady(workers, g, ms(t0));
      });
      workers.push(w);
    }
    return g;
  };

  const swap = () => {
    swapping = true;
    log('swap begun', { gen: gen + 1 });
    startGen((workers, g, elapsed) => {
      swapping = false;
      if (workers === null) {
        log('swap aborted', { gen: g, reason: 'worker exited before listening' });
      } else {
        const old = current;
        current = { gen: g, workers };
        for (const w of old.workers) w.process.kill('SIGTERM');
        log('swap complete', { gen: g, elapsed });
      }
      if (queued && !stopping) {
        queued = false;
        swap();
      }
    });
  };

  process.on('SIGHUP', () => {
    if (stopping) return;
    if (swapping) queued = true;
    else swap();
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    const left = () => Object.keys(cluster.workers).length;
    if (left() === 0) process.exit(0);
    cluster.on('exit', () => { if (left() === 0) process.exit(0); });
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => {
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
    }, 10000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  startGen((workers, g, elapsed) => {
    if (workers === null) {
      log('error', { err: 'first generation failed' });
      stop();
      return;
    }
    current = { gen: g, workers };
    log('generation ready', { gen: g, elapsed });
  });
} else {
  const GEN = process.env.GEN || '0';
  const WORKER = process.env.WORKER || '0';
  const body = `hello from generation ${GEN} worker ${WORKER} pid ${process.pid}\n`;
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, {
      'X-Baton-Generation': GEN,
      'X-Baton-Pid': String(process.pid),
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  process.on('SIGTERM', () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  });
  server.listen(PORT, HOST);
}
