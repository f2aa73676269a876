"""The workflows both front ends use (the workspace service, the apply loop, checkpoints), without Qt."""
