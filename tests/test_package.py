"""Package-wide behaviour: what importing lorabooth does to the libraries beneath it."""

import subprocess
import sys


def test_importing_lorabooth_hides_the_install_torchvision_advice():
    # transformers tells users to install torchvision when diffusers touches CLIP's image processor;
    # beside the CPU torch wheel that advice breaks every import, so lorabooth filters exactly that notice.
    code = "import lorabooth\nfrom diffusers import StableDiffusionPipeline\nimport logging\n" \
           "logging.getLogger('transformers.utils.import_utils').warning('another notice')\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "requires torchvision" not in result.stderr
    assert "another notice" in result.stderr  # other transformers warnings still reach the user


def test_importing_lorabooth_hides_the_hub_kernel_advice_of_bitsandbytes():
    # bitsandbytes asks AVX512-bf16 CPUs to `pip install kernels` (a hub download) for 4-bit matmuls
    # lorabooth never runs; the notice is logged directly so the test does not depend on the CPU.
    code = ("import lorabooth, logging\nlog = logging.getLogger('bitsandbytes.backends.cpu.ops')\n"
            "log.warning('Failed to load CPU gemm_4bit_forward from kernels-community: x')\n"
            "log.warning('another notice')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "gemm_4bit_forward" not in result.stderr
    assert "another notice" in result.stderr
