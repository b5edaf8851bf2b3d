"""Calls authz makes to the outside while it decides: key sets today;
introspection and data callouts next. :mod:`authz.outside.loop` runs them
off the decision threads, :mod:`authz.outside.fetcher` keeps one remote
value fresh (refresh, single flight, stale-if-error, backoff, callers that
wait), :mod:`authz.outside.http` fetches a bounded JSON document. A caller
that must wait gets the call's future (:class:`authz.engine.CallPending`).
"""
