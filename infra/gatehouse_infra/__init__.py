"""The Gatehouse Pulumi program as an importable package: `program.main()` declares the stack;
tests call `aws.deploy` / `gcp.deploy` with explicit settings under Pulumi's mocks."""
