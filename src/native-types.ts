// The whole native surface, as exported by native/addon.cpp. Keep in sync.

export interface NativeDevice {
  /** ggml device name, e.g. "CPU", "Vulkan0", "CUDA0". */
  name: string;
  description: string;
  type: "cpu" | "gpu" | "igpu" | "accel" | "unknown";
  /** ggml backend that owns the device, e.g. "CPU", "Vulkan". */
  backend: string;
  memoryFree: number;
  memoryTotal: number;
}

export interface NativeSystemInfo {
  /** The llama.cpp commit the addon was compiled from. */
  llamaCppCommit: string;
  /** The backend selected at build time: "cpu", "metal", "cuda" or "vulkan". */
  backend: "cpu" | "metal" | "cuda" | "vulkan";
  /** ggml backends compiled in, e.g. ["CPU"] or ["Vulkan", "CPU"]. */
  backends: string[];
  devices: NativeDevice[];
  /** CPU instruction sets the CPU backend was compiled to use, e.g. ["SSE3", "AVX2", "FMA"]. */
  cpuFeatures: string[];
  /** The text marker that stands for one image/audio/video item in a prompt. */
  mediaMarker: string;
  /** llama.cpp's own one-line summary (llama_print_system_info). */
  llamaSystemInfo: string;
}

export interface NativeDeviceCheck {
  device: string;
  backend: string;
  ok: boolean;
  /** Largest error of the Q8_0 matmul relative to a float64 reference. */
  maxError: number;
  milliseconds: number;
  error?: string;
}

export interface NativeBinding {
  systemInfo(): NativeSystemInfo;
  mediaMarker(): string;
  checkDevices(): Promise<NativeDeviceCheck[]>;
}
