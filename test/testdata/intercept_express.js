// An Express app like the seed's server.js: http.createServer(app).listen(PORT),
// no signal handler, no LISTEN_FDS code (Debian's node-express).
const express = require('express');
const http = require('http');
const app = express();
const gen = process.env.BATON_GENERATION || '';
app.get('/', (req, res) => {
  res.set('X-Baton-Generation', gen);
  res.send(`hello from express pid ${process.pid}\n`);
});
http.createServer(app).listen(Number(process.env.PORT || 8080));
