// An unchanged Node app, as the seed's server.js: it binds its own port,
// has no signal handler and knows nothing of LISTEN_FDS or READY=1. It
// names its generation (BATON_GENERATION) only so tests can tell them apart.
const http = require('http');
const gen = process.env.BATON_GENERATION || '';
http.createServer((req, res) => {
  res.setHeader('X-Baton-Generation', gen);
  res.end(`hello from node pid ${process.pid}\n`);
}).listen(Number(process.env.PORT || 8080));
