"""What lives inside a raw disk: MBR and GPT tables, filesystem signatures, boot code.

Everything here reads a guest disk through ``binary.ByteSource`` and imports nothing of
imagewright's but ``errors``, ``binary`` and ``units``.
"""
