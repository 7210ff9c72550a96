# Fails early, naming the missing piece, instead of deep inside ggml-vulkan.
find_package(Vulkan QUIET COMPONENTS glslc)
if (NOT Vulkan_FOUND)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=vulkan: the Vulkan loader and headers were not found. "
        "Install them (Debian/Ubuntu: `apt-get install libvulkan-dev`) or the LunarG Vulkan SDK, or build with MULTIMODAL_LM_GPU=cpu.")
endif()
if (NOT Vulkan_glslc_FOUND)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=vulkan: the `glslc` shader compiler was not found. "
        "Install it (Debian/Ubuntu: `apt-get install glslc`) or the LunarG Vulkan SDK.")
endif()
# ggml-vulkan uses VK_EXT_layer_settings, which Debian 12's headers (1.3.239) lack.
file(STRINGS "${Vulkan_INCLUDE_DIR}/vulkan/vulkan_core.h" MULTIMODAL_LM_VK_LAYER_SETTINGS REGEX "define VK_EXT_layer_settings 1")
if (NOT MULTIMODAL_LM_VK_LAYER_SETTINGS)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=vulkan: the Vulkan headers in ${Vulkan_INCLUDE_DIR} (${Vulkan_VERSION}) are too old: "
        "this llama.cpp needs VK_EXT_layer_settings. Install newer headers "
        "(Debian 13, Ubuntu 24.04, or the LunarG Vulkan SDK) and point the build at them with "
        "MULTIMODAL_LM_CMAKE_ARGS=\"-DVulkan_INCLUDE_DIR=/path/to/include\". On Debian 12, "
        "`bash scripts/debian12-vulkan-tools.sh` provides them.")
endif()
find_package(SPIRV-Headers CONFIG QUIET)
if (NOT SPIRV-Headers_FOUND)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=vulkan: SPIRV-Headers were not found. Install them (Debian/Ubuntu: `apt-get install spirv-headers`).")
endif()
# This llama.cpp compiles some shaders (the Intel Xe flash-attention decode path)
# with GL_KHR_cooperative_matrix unconditionally, so glslc must support it
# (shaderc 2024.x or newer; Debian 12's 2023.2 does not).
execute_process(
    COMMAND "${Vulkan_GLSLC_EXECUTABLE}" -o - -fshader-stage=compute --target-env=vulkan1.3
            "${MULTIMODAL_LM_LLAMA_DIR}/ggml/src/ggml-vulkan/vulkan-shaders/feature-tests/coopmat.comp"
    OUTPUT_QUIET
    ERROR_VARIABLE MULTIMODAL_LM_GLSLC_ERROR
    RESULT_VARIABLE MULTIMODAL_LM_GLSLC_RESULT)
if (NOT MULTIMODAL_LM_GLSLC_RESULT EQUAL 0 OR MULTIMODAL_LM_GLSLC_ERROR MATCHES "extension not supported")
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=vulkan: ${Vulkan_GLSLC_EXECUTABLE} does not support GL_KHR_cooperative_matrix, "
        "which this llama.cpp's Vulkan shaders need. Install a newer glslc (shaderc 2024.x+: Debian 13, Ubuntu 24.04, "
        "or the LunarG Vulkan SDK) and point the build at it with "
        "MULTIMODAL_LM_CMAKE_ARGS=\"-DVulkan_GLSLC_EXECUTABLE=/path/to/glslc\". On Debian 12, "
        "`bash scripts/debian12-vulkan-tools.sh` provides one.")
endif()
