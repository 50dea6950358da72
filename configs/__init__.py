"""Run configs: `get_config(arg)` files built on configs/_base.py (`--config=configs/X.py`)."""
