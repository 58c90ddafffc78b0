"""The test house: helpers shared by every test tier (conftest files hold fixtures only).

* :mod:`tests.support.processes` launches every child process (Granian apps, the sandbox,
  workers) and :mod:`tests.support.sandbox` configures and drives the upstream sandbox;
* :mod:`tests.support.db` creates and drops databases and Redis key spaces;
* :mod:`tests.support.fakes`, :mod:`tests.support.clocks`, :mod:`tests.support.factories`,
  :mod:`tests.support.strategies` build what tests feed the code under test;
* :mod:`tests.support.polling` waits for events (``wait_until``) instead of sleeping;
* :mod:`tests.support.chaos` holds the chaos tier's load, proxy, ledger and scenario helpers.
"""
