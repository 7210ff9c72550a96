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
find_package(SPIRV-Headers CONFIG QUIET)
if (NOT SPIRV-Headers_FOUND)
    message(FATAL_ERROR
        "MULTIMODAL_LM_GPU=vulkan: SPIRV-Headers were not found. Install them (Debian/Ubuntu: `apt-get install spirv-headers`).")
endif()
