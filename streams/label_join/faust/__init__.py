"""Every Faust-specific touch of the label-join worker, fenced in one folder: the app
(`app`), the consumer port on Faust's consumer (`consumer_port`: private committed offsets and
commit), the fetcher's wait and size (`fetch_tuning`), the quiet Monitor (`quiet_monitor`),
the inline record delivery (`delivery`) and the re-read of records Faust skipped
(`hole_read`). tests/streams/label_join/faust/test_faust_fence.py fails when the installed
faust-streaming changes what these rely on."""
