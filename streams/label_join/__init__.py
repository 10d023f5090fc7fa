"""The label join (`convcg worker`): the rules (`rules`), the event-time joiner (`joiner`), its
state on the changelog (`state`), the watermark (`watermark`), the in-order acks (`ack_order`),
the batch processor (`processor`), and reading the label topic (`labels`). Everything that
touches Faust is in `faust/`."""
