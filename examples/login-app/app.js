// The article's app: an Express service that records logins and logouts with mongoose, in its
// own shape (userId, eventType, payload, createdAt; no version), and reads the `sessions`
// collection that `evstream rebuild sessions --follow` keeps up to date from those events.
//
//   MONGODB_URI  where the data lives (the dev store: `evstream server start --tcp` prints it)
//   MONGODB_DB   the database, when the URI names none (default: the URI's, else evstream)
//   PORT         the HTTP port (default 3000)
const express = require('express');
const mongoose = require('mongoose');

const LoginEvent = mongoose.model(
  'LoginEvent',
  new mongoose.Schema(
    {
      userId: { type: String, required: true },
      eventType: { type: String, required: true, enum: ['login', 'logout'] },
      payload: { type: Object, default: {} },
      createdAt: { type: Date, default: Date.now },
    },
    // The collection named in evstream.toml's [log] map; no __v field.
    { collection: 'events', versionKey: false, minimize: false },
  ),
);

// Written by evstream's sessions projection, read here.
const Session = mongoose.model(
  'Session',
  new mongoose.Schema({ _id: String }, { collection: 'sessions', strict: false }),
);

function createApp() {
  const app = express();
  app.use(express.json());

  app.post('/login', async (req, res) => {
    const { userId, username } = req.body ?? {};
    if (typeof userId !== 'string' || !userId) {
      return res.status(400).json({ error: 'userId (a string) is required' });
    }
    const event = await LoginEvent.create({
      userId,
      eventType: 'login',
      payload: { username: username ?? userId, ip: req.ip },
    });
    res.status(201).json({ id: String(event._id) });
  });

  app.post('/logout', async (req, res) => {
    const { userId } = req.body ?? {};
    if (typeof userId !== 'string' || !userId) {
      return res.status(400).json({ error: 'userId (a string) is required' });
    }
    const event = await LoginEvent.create({ userId, eventType: 'logout' });
    res.status(201).json({ id: String(event._id) });
  });

  app.get('/sessions/:userId', async (req, res) => {
    const session = await Session.findById(req.params.userId).lean();
    if (!session) return res.status(404).json({ error: 'no session yet' });
    res.json(session);
  });

  return app;
}

async function main() {
  const uri = process.env.MONGODB_URI;
  if (!uri) {
    console.error('set MONGODB_URI (evstream server start --tcp prints the dev store\'s)');
    process.exit(2);
  }
  await mongoose.connect(uri, process.env.MONGODB_DB ? { dbName: process.env.MONGODB_DB } : {});

  // The article's listener, in the app itself: a change stream on the log, as mongosh's
  // db.events.watch() would show it.
  const changes = LoginEvent.watch();
  changes.on('change', (change) => {
    const doc = change.fullDocument ?? {};
    console.log(`change: ${change.operationType} ${doc.eventType} ${doc.userId}`);
  });
  changes.on('error', (err) => console.error(`change stream: ${err.message}`));

  const port = Number(process.env.PORT || 3000);
  const server = createApp().listen(port, '127.0.0.1', () => {
    console.log(`login-app listening on http://127.0.0.1:${port} (database ${mongoose.connection.name})`);
  });

  const stop = async () => {
    server.close();
    await changes.close();
    await mongoose.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(`login-app: ${err.message}`);
    process.exit(1);
  });
}

module.exports = { createApp, LoginEvent };
