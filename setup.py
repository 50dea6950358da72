"""seekjax: teach a small language model to seek help from a large one, with RL in JAX."""
from setuptools import find_packages, setup

setup(
    name="seekjax",
    version="0.1.0",
    description="JAX/Flax RL stack that teaches an SLM when and what to ask an LLM helper",
    packages=find_packages(include=["seekjax", "seekjax.*", "configs"]),   # configs: importable by config files
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.10",
        "tensorstore>=0.1.60",
        "ml-collections>=0.1.1",
        "grain>=0.2.10",
        "transformers>=4.46",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "gguf>=0.10",
        "jinja2>=3.1",
        "numpy>=1.26",
        "openai>=1.40",
        "bm25s>=0.2",
        "countryinfo>=0.1.2",
        "reasoning-gym>=0.1.20",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "absl-py>=2.0",
    ],
    extras_require={
        "test": ["pytest>=8", "aiohttp>=3.9", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                 "pyarrow>=14"],
        "torch": ["torch>=2.4"],
    },
)
