// A socket.io-client 4 dashboard stand-in for integration/socketio_test.go.
//
// Usage: node client.mjs '{"url": "http://127.0.0.1:8080", "options": {...}}'
//
// It connects with the given socket.io-client options and prints one JSON
// line per thing that happens:
//
//   {"type":"connect","id":...,"recovered":bool,"transport":"polling"}
//   {"type":"upgrade","transport":"websocket"}
//   {"type":"event","name":"ticket:created","args":[data, offset]}
//   {"type":"connect_error","message":...}
//   {"type":"disconnect","reason":...}
//   {"type":"reconnect_attempt","attempt":n}
//
// It reads commands from stdin, one per line:
//
//   close-engine  close the Engine.IO connection, as a network failure would
//                 (the socket keeps its pid and offset for recovery)
//   connect       connect again after close-engine with reconnection off
//   disconnect    socket.disconnect()
//   emit NAME JSON  socket.emit(NAME, JSON)
//   exit          disconnect and exit
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(cfg.url, cfg.options ?? {});

socket.on("connect", () => {
  out({
    type: "connect",
    id: socket.id,
    recovered: socket.recovered === true,
    transport: socket.io.engine.transport.name,
  });
});
socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (transport) => out({ type: "upgrade", transport: transport.name }));
});
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.io.on("reconnect_attempt", (attempt) => out({ type: "reconnect_attempt", attempt }));
socket.onAny((name, ...args) => out({ type: "event", name, args }));

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const [cmd, ...rest] = line.trim().split(" ");
  switch (cmd) {
    case "close-engine":
      socket.io.engine.close();
      break;
    case "connect":
      socket.connect();
      break;
    case "disconnect":
      socket.disconnect();
      break;
    case "emit": {
      const [name, ...json] = rest;
      socket.emit(name, JSON.parse(json.join(" ")));
      break;
    }
    case "exit":
      socket.disconnect();
      process.exit(0);
  }
});
// The test ends by closing stdin (or killing the process).
rl.on("close", () => {
  socket.disconnect();
  process.exit(0);
});
