"""bothnia's ML2 mechanism driver for Neutron (see driver.py)."""
