/* Compiled in place of a CPU variant that this build leaves out (CMakeLists.txt). */
typedef int multimodal_lm_unused_cpu_variant;
