"""seekjax: teach a small language model to seek help from a large one, with RL in JAX."""
from setuptools import find_packages, setup

setup(
    name="seekjax",
    version="0.1.0",
    description="JAX/Flax RL stack that teaches an SLM when and what to ask an LLM helper",
    packages=find_packages(include=["seekjax", "seekjax.*", "configs"]),   # configs: importable by config files
    package_data={"seekjax.tasks": ["data/*.jsonl"],   # the paraphrase check's fixture
                  "seekjax.models": ["cpu_attention.cc", "cpu_matmul.cc", "cpu_kernels.h"]},   # built on first use
    python_requires=">=3.10",
    # Lower bounds: the oldest versions the fast tests pass with (docs/install.md); the
    # tested versions are pinned in requirements/lock.txt.
    install_requires=[
        "jax>=0.6.1",
        "flax>=0.10",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11.20",
        "tensorstore>=0.1.71",
        "etils[epath]>=1.15",   # workdirs (local or gs://) through etils.epath, as orbax does
        "ml-collections>=1.0",
        "grain>=0.2.10",
        "transformers>=4.51",
        "safetensors>=0.4.3",
        "tokenizers>=0.21",
        "gguf>=0.16",
        "jinja2>=3.1",
        "numpy>=1.26",
        "openai>=1.55.3",
        "bm25s>=0.2",
        "countryinfo>=1.0.1",
        "reasoning-gym>=0.1.20",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "absl-py>=2.0",
    ],
    extras_require={
        "test": ["pytest>=8", "aiohttp>=3.9", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                 "pyarrow>=14", "packaging>=22"],
        "torch": ["torch>=2.4"],
        # Accelerators (docs/install.md): jax's own extras pin the plugin to the installed jaxlib.
        "cuda": ["jax[cuda12]>=0.6.1"],
        "tpu": ["jax[tpu]>=0.6.1"],
    },
)
