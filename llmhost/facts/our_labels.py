"""The labels llmhost writes on its images and containers, read back as facts: one name each.

`llmhost build` writes them; the plan, doctor and deploy read them from the engine.
"""

from __future__ import annotations

PREFIX = "io.llmhost."
# What an image is: written when it is built.
PROFILE = "io.llmhost.profile"  # the image profile of the service it was built for
BUILT_FOR = "io.llmhost.built_for"  # the hostname of the plan
LLMHOST_VERSION = "io.llmhost.llmhost_version"
ISA = "io.llmhost.isa"  # the plan's CPU ISA features, comma-separated
ISA_LEFT_OUT = "io.llmhost.isa.left_out"  # ISA features the plan switched off, and why
CMAKE = "io.llmhost.llama.cmake_flags"
LLAMA_VERSION = "io.llmhost.llama.version"
LLAMA_COMMIT = "io.llmhost.llama.commit"
SOURCE_FIXES = "io.llmhost.llama.source_fixes"  # ids of llmhost.actions.source_fixes applied
VLLM_VERSION = "io.llmhost.vllm.version"
CUDA_VERSION = "io.llmhost.cuda.version"
CUDA_ARCH = "io.llmhost.cuda.architectures"
# Each base image the Dockerfile names, as the digest it resolved to when this image was built:
# "debian:bookworm-slim=sha256:...". A registry's digest where the engine has one, else the
# local image id (an imported base has no registry digest).
BASE_IMAGES = "io.llmhost.base_images"
# Written by `llmhost build` after building, from what the tools found inside the image.
SASS = "io.llmhost.check.cuda_sass"  # "90" or "89,120a": ELF (machine code) architectures
PTX = "io.llmhost.check.cuda_ptx"  # "90": PTX the driver can JIT-compile
REQUIRE = "io.llmhost.check.cuda_require"  # "13.0": the image's NVIDIA_REQUIRE_CUDA
COMPAT = "io.llmhost.check.cuda_compat"  # "580.82.07" or "none": forward-compat libcuda
COMPAT_ON_PATH = "io.llmhost.check.cuda_compat_on_path"  # "true" if on LD_LIBRARY_PATH
TORCH = "io.llmhost.check.torch_arch"  # "sm_80,sm_90,...": torch.cuda.get_arch_list()
FLOOR_STATUS = "io.llmhost.floor_status"  # ok | unverified | override
FLOOR_OVERRIDE = "io.llmhost.floor_override"
SELFTEST = "io.llmhost.selftest"  # "passed" / "failed: <one line>"
# "amx": what the plan leaves out after the image crashed its self-test
SELFTEST_LEAVE_OUT = "io.llmhost.selftest.leave_out"
SELFTEST_CPU = "io.llmhost.selftest.cpu"  # the CPU model the verdict was reached on
# On the services' containers (compose).
SERVICE = "io.llmhost.service"
PORT = "io.llmhost.port"
