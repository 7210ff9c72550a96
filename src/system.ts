import { getBinding } from "./binding.js";
import type { NativeDeviceCheck, NativeSystemInfo } from "./native-types.js";

export type SystemInfo = NativeSystemInfo;
export type DeviceCheck = NativeDeviceCheck;

/** What the loaded addon was built from and what it can run on. */
export function systemInfo(): SystemInfo {
  return getBinding().systemInfo();
}

/**
 * Runs a small Q8_0 matrix multiply on every device and compares it with a
 * float64 reference. Use it to confirm a GPU build (or a CPU without some
 * instruction set) computes correctly before loading a model.
 */
export function checkDevices(): Promise<DeviceCheck[]> {
  return getBinding().checkDevices();
}
