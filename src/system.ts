import { getBinding } from "./binding.js";
import { rpcDevicesOfEngines } from "./rpc.js";
import type { NativeDeviceCheck, NativeSystemInfo } from "./native-types.js";

export type SystemInfo = NativeSystemInfo;
export type DeviceCheck = NativeDeviceCheck;

/** What the loaded addon was built from and what it can run on. */
export function systemInfo(): SystemInfo {
  const info = getBinding().systemInfo();
  // RPC servers' devices, also when an engine process (isolation: "process") registered them.
  const names = new Set(info.devices.map((d) => d.name));
  const remote = rpcDevicesOfEngines().filter((d) => !names.has(d.name));
  return remote.length > 0 ? { ...info, devices: [...info.devices, ...remote] } : info;
}

/**
 * Runs a small Q8_0 matrix multiply on every device and compares it with a
 * float64 reference. Use it to confirm a GPU build (or a CPU without some
 * instruction set) computes correctly before loading a model.
 */
export function checkDevices(): Promise<DeviceCheck[]> {
  return getBinding().checkDevices();
}
