"""`pulumi up` runs this: the program lives in the importable package `gatehouse_infra`."""

from gatehouse_infra import program

program.main()
