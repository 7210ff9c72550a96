// Prints what the installed native addon was built from (llama.cpp commit, backend, CPU
// features, devices) and checks that every device computes correctly (a small Q8_0 matmul per
// device, compared with a float64 reference). Loads no model.
//   npx tsx examples/system-info.ts
import { checkDevices, systemInfo } from "multimodal-lm";

const info = systemInfo();
console.log(`llama.cpp ${info.llamaCppCommit} (${info.backend} build)`);
console.log(`backends: ${info.backends.join(", ")}`);
console.log(`cpu features: ${info.cpuFeatures.join(" ")}`);
if (info.cpuVariant) {
  // Linux x86-64 CPU builds load a CPU backend variant at run time.
  console.log(`cpu variant: ${info.cpuVariant.name ?? "none"} (${info.cpuVariant.reason})`);
  for (const c of info.cpuVariant.candidates) {
    console.log(`  ${c.name === info.cpuVariant.name ? "*" : " "} ${c.name.padEnd(15)} score ${String(c.score).padStart(5)}${c.note ? `  ${c.note}` : ""}`);
  }
}
for (const device of info.devices) {
  console.log(`device ${device.name}: ${device.description} [${device.type}]`);
}
let failed = 0;
for (const check of await checkDevices()) {
  if (!check.ok) failed++;
  console.log(`check ${check.device}: ${check.ok ? "ok" : `FAILED (${check.error})`}, max error ${check.maxError.toExponential(2)}`);
}
if (failed > 0) process.exitCode = 1;
