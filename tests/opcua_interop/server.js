// node-opcua server for plantwatch's interoperability tests.
//
//   node server.js --port 4840 [--counters 100] [--rate 10]
//
// Namespace 1 holds plant tags (R101.*) and counters C.0..C.n-1 that count up at --rate Hz, each
// update with its own source timestamp. R101.BAD always reports BadSensorFailure. Prints
// "READY <endpoint>" once listening, and "REQ <service>" for every request except Publish, so the
// test can prove that the client never wrote nor called a method.
"use strict";

const path = require("path");
const os = require("os");
const fs = require("fs");
const { OPCUAServer } = require("node-opcua-server");
const { Variant, DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");
const { DataValue } = require("node-opcua-data-value");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const port = parseInt(arg("port", "4840"), 10);
  const counters = parseInt(arg("counters", "100"), 10);
  const rate = parseFloat(arg("rate", "10"));
  // a private PKI folder per run: node-opcua writes its own certificate there
  const pki = fs.mkdtempSync(path.join(os.tmpdir(), "plantwatch-node-opcua-"));
  const server = new OPCUAServer({
    port,
    resourcePath: "/UA/interop",
    hostname: "127.0.0.1",
    alternateHostname: ["127.0.0.1"],
    buildInfo: { productName: "plantwatch interop", buildNumber: "1", buildDate: new Date() },
    serverCertificateManager: undefined,
    pkiFolder: pki,
    maxConnectionsPerEndpoint: 20,
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "R101" });
  const plant = {
    "R101.TI01": [DataType.Double, 85.0],
    "R101.RUN": [DataType.Boolean, true],
    "R101.CNT": [DataType.Int32, 7],
    "R101.BAD": [DataType.Double, 0.0],
  };
  for (const [name, [dataType, value]] of Object.entries(plant)) {
    const v = ns.addVariable({
      componentOf: folder, nodeId: `s=${name}`, browseName: name, dataType,
      minimumSamplingInterval: 0,
    });
    const status = name === "R101.BAD" ? StatusCodes.BadSensorFailure : StatusCodes.Good;
    v.setValueFromSource(new Variant({ dataType, value }), status, new Date());
  }
  const counterVars = [];
  for (let i = 0; i < counters; i++) {
    const v = ns.addVariable({
      componentOf: folder, nodeId: `s=C.${i}`, browseName: `C.${i}`, dataType: "Double",
      // 0: the server samples on every change (exception-based), so no update is skipped
      minimumSamplingInterval: 0,
    });
    v.setValueFromSource(new Variant({ dataType: DataType.Double, value: 0 }), StatusCodes.Good, new Date());
    counterVars.push(v);
  }
  server.on("request", (request) => {
    const name = request.schema ? request.schema.name : request.constructor.name;
    if (name !== "PublishRequest") console.log(`REQ ${name}`);
  });
  await server.start();
  console.log(`READY ${server.getEndpointUrl()}`);
  let k = 0;
  const timer = setInterval(() => {
    k += 1;
    const now = new Date();
    for (const v of counterVars) {
      v.setValueFromSource(new Variant({ dataType: DataType.Double, value: k }), StatusCodes.Good, now);
    }
  }, 1000 / rate);
  const stop = async () => {
    clearInterval(timer);
    await server.shutdown(0);
    fs.rmSync(pki, { recursive: true, force: true });
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
