"""Sub-commands of `peft-autoconfig`; each module defines `register(subparsers)`."""
