// Prints what the installed addon was built from and checks every device.
//   node examples/system-info.mjs
import { checkDevices, systemInfo } from "multimodal-lm";

const info = systemInfo();
console.log(`llama.cpp ${info.llamaCppCommit} (${info.backend} build)`);
console.log(`backends: ${info.backends.join(", ")}`);
console.log(`cpu features: ${info.cpuFeatures.join(" ")}`);
for (const device of info.devices) {
  console.log(`device ${device.name}: ${device.description} [${device.type}]`);
}
for (const check of await checkDevices()) {
  console.log(`check ${check.device}: ${check.ok ? "ok" : `FAILED (${check.error})`}, max error ${check.maxError.toExponential(2)}`);
}
