// Interop test: Element's crypto stack (matrix-js-sdk with its Rust crypto,
// in-memory store) against a running Enclave.
//
//   node e2ee.mjs <base URL> <registration shared secret>
//
// Alice and Bob share an encrypted room and each decrypts the other's
// message; then Alice logs in a second device, which decrypts a message Bob
// sends after it appeared (Bob learns of it through device_lists). Exits 0
// on success and prints "N passed, N failed".

import { createHmac } from "node:crypto";

// matrix-js-sdk 43 targets Node 22; Node 20 lacks Promise.withResolvers.
// Polyfill it before the SDK is loaded (hence the dynamic import below).
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve, reject;
        const promise = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

// The SDK logs verbosely through console; keep our own lines only, unless
// ENCLAVE_TEST_CLIENT_LOG asks for everything.
const say = (line) => process.stdout.write(line + "\n");
const sayErr = (line) => process.stderr.write(line + "\n");
if (!process.env.ENCLAVE_TEST_CLIENT_LOG) {
    for (const m of ["log", "debug", "info", "warn", "error", "trace"]) console[m] = () => {};
}

const sdk = await import("matrix-js-sdk");

const [baseUrl, sharedSecret] = process.argv.slice(2);
if (!baseUrl || !sharedSecret) {
    sayErr("usage: node e2ee.mjs <base URL> <shared secret>");
    process.exit(2);
}
const PASSWORD = "interop password";
const TIMEOUT_MS = 30000;
const clients = [];
let passed = 0;

function step(name) {
    passed++;
    say(`ok ${passed} - ${name}`);
}

async function api(method, path, body, token) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const json = await resp.json();
    if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(json)}`);
    return json;
}

// register creates a user with the shared-secret admin API.
async function register(localpart) {
    const { nonce } = await api("GET", "/_synapse/admin/v1/register");
    const mac = createHmac("sha1", sharedSecret)
        .update(`${nonce}\x00${localpart}\x00${PASSWORD}\x00notadmin`)
        .digest("hex");
    return api("POST", "/_synapse/admin/v1/register", { nonce, username: localpart, password: PASSWORD, admin: false, mac });
}

async function login(localpart) {
    return api("POST", "/_matrix/client/v3/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password: PASSWORD,
    });
}

async function waitUntil(what, fn) {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

// start runs a client with Rust crypto (in-memory: no IndexedDB) and waits
// for its first sync.
async function start(session) {
    const client = sdk.createClient({
        baseUrl,
        userId: session.user_id,
        accessToken: session.access_token,
        deviceId: session.device_id,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state) => {
            if (state === "PREPARED" || state === "SYNCING") resolve();
            if (state === "ERROR") reject(new Error(`${session.user_id}: sync error`));
        });
    });
    await client.startClient({ initialSyncLimit: 20 });
    await prepared;
    clients.push(client);
    return client;
}

// decrypted waits until the client holds the event decrypted and returns
// its body; the event must have been encrypted on the wire.
async function decrypted(client, roomId, eventId) {
    return waitUntil(`${client.getUserId()}/${client.getDeviceId()} to decrypt ${eventId}`, async () => {
        const ev = client.getRoom(roomId)?.findEventById(eventId);
        if (!ev) return null;
        await client.decryptEventIfNeeded(ev);
        if (ev.isBeingDecrypted() || ev.isDecryptionFailure() || ev.getType() !== "m.room.message") return null;
        if (!ev.isEncrypted()) throw new Error(`${eventId} was not encrypted`);
        return ev.getContent().body;
    });
}

async function expectBody(client, roomId, eventId, want) {
    const got = await decrypted(client, roomId, eventId);
    if (got !== want) throw new Error(`${client.getDeviceId()} decrypted ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

async function main() {
    const suffix = Date.now().toString(36);
    const aliceSession = await register(`jsalice${suffix}`);
    const bobSession = await register(`jsbob${suffix}`);
    const alice = await start(aliceSession);
    const bob = await start(bobSession);
    step("two clients with Rust crypto synced");

    const { room_id: roomId } = await alice.createRoom({
        preset: "private_chat",
        invite: [bob.getUserId()],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await waitUntil("Bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId);
    await waitUntil("Alice to see Bob joined", () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
    for (const c of [alice, bob]) {
        await waitUntil("the room to be encrypted", () => c.getCrypto().isEncryptionEnabledInRoom(roomId));
    }
    step("encrypted room with both users joined");

    const m1 = await alice.sendMessage(roomId, { msgtype: "m.text", body: "hello bob, from js" });
    await expectBody(bob, roomId, m1.event_id, "hello bob, from js");
    step("Bob decrypts Alice's message");
    const m2 = await bob.sendMessage(roomId, { msgtype: "m.text", body: "hello alice, from js" });
    await expectBody(alice, roomId, m2.event_id, "hello alice, from js");
    step("Alice decrypts Bob's message");

    const alice2 = await start(await login(aliceSession.user_id));
    await waitUntil("Bob to learn of Alice's new device", async () => {
        const devices = await bob.getCrypto().getUserDeviceInfo([alice.getUserId()], true);
        return devices.get(alice.getUserId())?.has(alice2.getDeviceId());
    });
    await waitUntil("Alice's new device to see the room", () => alice2.getRoom(roomId)?.getMyMembership() === "join");
    step("Bob learns of Alice's new device through device_lists");
    const m3 = await bob.sendMessage(roomId, { msgtype: "m.text", body: "for both of your devices" });
    await expectBody(alice2, roomId, m3.event_id, "for both of your devices");
    await expectBody(alice, roomId, m3.event_id, "for both of your devices");
    step("Alice's new device decrypts a later message");
    const m4 = await alice2.sendMessage(roomId, { msgtype: "m.text", body: "from the new device" });
    await expectBody(bob, roomId, m4.event_id, "from the new device");
    step("Bob decrypts a message from Alice's new device");
}

let failed = 0;
const timer = setTimeout(() => {
    sayErr("not ok - the interop test timed out");
    say(`${passed} passed, 1 failed`);
    process.exit(1);
}, 120000);
try {
    await main();
} catch (err) {
    failed = 1;
    sayErr(`not ok - ${err.stack || err}`);
}
clearTimeout(timer);
for (const c of clients) c.stopClient();
say(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
