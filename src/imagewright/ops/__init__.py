"""The pipeline stages (inspect, convert, resize, build, prepare), each a plain function."""
