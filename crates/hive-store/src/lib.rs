//! hyperhive's durable state on sqlite (work in progress).
