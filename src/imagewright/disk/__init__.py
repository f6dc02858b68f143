"""What lives inside a raw disk: MBR and GPT tables, filesystem signatures, boot code.

Everything here reads a guest disk through ``binary.ByteSource`` and imports nothing of
imagewright's but ``errors``, ``binary`` and ``units``.

- ``partitions``: ``read_partition_table`` (MBR with its EBR chain, or GPT), the checks
  shared by both, and the pure writers ``grow_partition`` / ``relocate_gpt_backup``;
- ``mbr`` and ``gpt``: the on-disk structures, their readers and packers;
- ``table``: ``PartitionTable``, ``Partition`` and ``DiskWrite`` (bytes a caller writes);
- ``guids``: GUID byte order and the partition type names fdisk prints;
- ``filesystems``: ``probe_filesystem`` and one blkid-like probe per family;
- ``bootcode``: ``detect_boot_code`` and which partitions matter for booting;
- ``survey``: one look at a whole disk (table, filesystems, boot code) for ``inspect``.
"""
