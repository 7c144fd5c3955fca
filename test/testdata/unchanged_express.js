// The seed's kind of app under load: Express, http.createServer(app).listen(PORT),
// no signal handler, no LISTEN_FDS code (Debian's node-express). It answers
// every method (demo.Load sends POSTs) and names its generation
// (BATON_GENERATION) only so tests can tell them apart.
const express = require('express');
const http = require('http');
const app = express();
const gen = process.env.BATON_GENERATION || '';
app.all('/', (req, res) => {
  res.set('X-Baton-Generation', gen);
  res.send(`hello from express pid ${process.pid}\n`);
});
http.createServer(app).listen(Number(process.env.PORT || 8080));
