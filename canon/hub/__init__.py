"""Push and pull zoos through the Hugging Face Hub."""
