"""Text as every reader of it sees it: ``words`` (the one word segmentation, with character offsets) and
``windows`` (the one way a long text is cut into encoder-sized windows)."""
