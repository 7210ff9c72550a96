export { BindingLoadError, MultimodalLMError } from "./errors.js";
export type { BindingLoadAttempt, BindingSource, MultimodalLMErrorCode } from "./errors.js";
export { bindingCandidates, loadBinding } from "./binding.js";
export type { BindingCandidate } from "./binding.js";
export { checkDevices, systemInfo } from "./system.js";
export type { DeviceCheck, SystemInfo } from "./system.js";
export type { NativeDevice } from "./native-types.js";
