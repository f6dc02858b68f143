"""What lives inside a raw disk: MBR and GPT tables, filesystem signatures, boot code.

Everything here reads a guest disk through ``binary.ByteSource`` and imports nothing of
imagewright's but ``errors``, ``binary`` and ``units``.

The modules, bottom floor first; each imports only modules listed before it:

- ``guids``: GUID byte order and the partition type names fdisk prints;
- ``mbr`` and ``gpt``: the on-disk structures (MBR sector and entries, GPT header and
  entries), parsed and packed;
- ``filesystems``: ``probe_filesystem`` and one blkid-like probe per family (they know
  nothing of partition tables);
- ``table``: ``PartitionTable``, ``Partition`` and ``DiskWrite`` (bytes a caller writes);
- ``mbr_table`` and ``gpt_table``: each kind of table read from a disk (EBR chain, primary
  or backup GPT) and the pure writers that change one;
- ``partitions``: ``read_partition_table`` (is sector 0 an MBR, a protective MBR, a FAT or
  NTFS boot sector?), the checks shared by both kinds, ``grow_partition`` and
  ``relocate_gpt_backup``;
- ``bootcode``: ``detect_boot_code`` and which partitions matter for booting;
- ``efiboot``: the UEFI boot files on an EFI System Partition (``scan_esp``, read through
  ``filesystems.fat``) and the PE/SBAT/Authenticode facts of each (``read_pe_image``);
- ``survey``: one look at a whole disk (table, filesystems, boot code) for ``inspect``.

``tests/test_import_graph.py`` holds the package to this order and to having no import cycle.
"""
