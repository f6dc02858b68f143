"""package: OVF/OVA packages and EC2 image bundles, written in one pass and verified end to end.

How a package is made (``passes``): the source is admitted by the safety gate (convert's
source preparation) and its guest bytes are read once, as a raw stream (convert's NBD sink
behind qemu-img), cut into 64 KiB grains (``grains``), each deflated once in parallel
(``deflate``), and handed to every target of the pass:

- ``vmdk_stream``  the streamOptimized VMDK writer (VMware's stream layout), front to back;
- ``ova``          the OVA: the VMDK written straight into its tar member, the descriptor
                   (``ovf_descriptor``), manifest and certificate (``signing``) put in front;
- ``bundle``       an EC2 image bundle as euca2ools writes it (tar, SHA-1, gzip, AES-128-CBC,
                   parts, ``bundle_manifest``);
- ``publish``      every output of one image from one read (qcow2, raw.gz, ova, bundle ...).
- ``tuned_source`` what ``publish`` reads when it boot-tunes (its default): a raw scratch copy of
                   the admitted source, edited by prepare's ``boot-tuning``; the source is never written.

How a package is read back: ``ova_verify`` (member order, digests, signature, certificate
chain, descriptor against members, the disk through the gate; and the one-pass extraction
``convert`` uses for an OVA source) and ``unbundle`` (every part digest, the manifest's
signature and the image digest, before anything is written).

Readers of tar, OVF, manifests and VMDK live in ``formats`` (one way to read each thing);
files are written through ``files``. The package room stands above ``ops``: it packages
what convert streams, and ops never imports it.
"""
