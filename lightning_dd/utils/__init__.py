"""Small utilities every layer may use: errors, number rules, atomic files, progress, allocator and hardware probes, logging.

Nothing here imports the rest of the package, so any module can depend on them without reaching up.
"""
