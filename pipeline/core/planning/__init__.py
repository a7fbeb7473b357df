"""Planning: what a run would do and cost, which instances it covers, what a change
to a manifest does, and how a run paces itself.
"""
