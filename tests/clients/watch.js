// Watch a collection with the Node driver, insert one document, and print the change it sees
// as one JSON line. Used by tests/test_dev_store_clients.py; NODE_PATH points at node_modules.
// Usage: node watch.js URI DB COLLECTION ID
const { MongoClient } = require('mongodb');

async function main() {
  const [uri, dbName, collection, id] = process.argv.slice(2);
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10000 });
  await client.connect();
  try {
    const coll = client.db(dbName).collection(collection);
    const stream = coll.watch();
    // The stream is open once its first (empty) batch has come back.
    const first = await stream.tryNext();
    if (first !== null) throw new Error('a change before the insert: ' + JSON.stringify(first));
    await coll.insertOne({ _id: id, stream: 'node', type: 'login', data: {} });
    const deadline = Date.now() + 20000;
    let change = null;
    while (change === null && Date.now() < deadline) {
      change = await stream.tryNext();
      if (change === null) await new Promise((r) => setTimeout(r, 50));
    }
    await stream.close();
    if (change === null) throw new Error('no change within 20 s');
    console.log(JSON.stringify({ operationType: change.operationType, id: change.fullDocument._id }));
  } finally {
    await client.close();
  }
}

main().catch((err) => {
  console.error(`${err.name}: ${err.message}`);
  process.exit(1);
});
