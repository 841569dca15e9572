"""PEFT methods of peft_autoconfig: blocks, the shared tuner layer, and the two methods."""
