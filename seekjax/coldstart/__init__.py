"""The supervised cold start: protocol demonstrations, taught facts and the SFT step that learns them."""
