// The device's keys and sessions in IndexedDB. CryptoKey objects are stored as they are
// (structured clone), so the non-extractable private keys stay non-extractable and never
// become bytes a script could read or send.

const DB_NAME = 'chat-e2e';
const STORE = 'kv';

function opened() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function run(mode, work) {
  return opened().then(
    (db) =>
      new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const request = work(tx.objectStore(STORE));
        tx.oncomplete = () => {
          db.close();
          resolve(request ? request.result : undefined);
        };
        tx.onerror = () => reject(tx.error);
      }),
  );
}

export function get(key) {
  return run('readonly', (store) => store.get(key));
}

export function put(key, value) {
  return run('readwrite', (store) => store.put(value, key));
}

export function remove(key) {
  return run('readwrite', (store) => store.delete(key));
}
