/*
 * The fragment gate (lib/io/fraggate.c): ENet fragment commands read from
 * crafted datagrams, and what a peer not yet trusted may make ENet reserve.
 */
#include <criterion/criterion.h>
#include <enet/enet.h>
#include <string.h>

#include "io/fraggate.h"

/* Appends a SEND_FRAGMENT command (with `data` bytes of fragment) at d+at. */
static size_t put_fragment(uint8_t *d, size_t at, int unreliable, uint8_t channel, uint16_t start,
                           uint32_t total, uint16_t data) {
  ENetProtocolSendFragment f;
  memset(&f, 0, sizeof(f));
  f.header.command = unreliable ? ENET_PROTOCOL_COMMAND_SEND_UNRELIABLE_FRAGMENT
                                : (ENET_PROTOCOL_COMMAND_SEND_FRAGMENT | ENET_PROTOCOL_COMMAND_FLAG_ACKNOWLEDGE);
  f.header.channelID = channel;
  f.header.reliableSequenceNumber = ENET_HOST_TO_NET_16(start);
  f.startSequenceNumber = ENET_HOST_TO_NET_16(start);
  f.dataLength = ENET_HOST_TO_NET_16(data);
  f.fragmentCount = ENET_HOST_TO_NET_32(2);
  f.totalLength = ENET_HOST_TO_NET_32(total);
  memcpy(d + at, &f, sizeof(f));
  memset(d + at + sizeof(f), 0xab, data);
  return at + sizeof(f) + data;
}

/* A datagram header for peer 5 with a sent time. */
static size_t put_header(uint8_t *d) {
  uint16_t peer = ENET_HOST_TO_NET_16(5 | ENET_PROTOCOL_HEADER_FLAG_SENT_TIME);
  memcpy(d, &peer, 2);
  d[2] = d[3] = 0;
  return 4;
}

Test(fraggate, a_huge_total_length_is_refused_before_trust_and_passes_after) {
  uint8_t d[1400];
  size_t n = put_fragment(d, put_header(d), 0, 0, 1, 32u << 20, 100);
  tern__frag_gate g;
  memset(&g, 0, sizeof(g));
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 0);
  cr_assert_eq(g.starts, 0, "a refused datagram begins nothing");
  g.trusted = 1;
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 1);
}

Test(fraggate, a_hello_sized_packet_passes_and_its_resends_count_once) {
  uint8_t d[1400];
  size_t n = put_fragment(d, put_header(d), 0, 0, 1, 2146, 1000);
  tern__frag_gate g;
  memset(&g, 0, sizeof(g));
  for (int i = 0; i < 10; i++) cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 1);
  cr_assert_eq(g.starts, 1);
}

Test(fraggate, only_a_few_reassemblies_begin_before_trust) {
  tern__frag_gate g;
  memset(&g, 0, sizeof(g));
  uint8_t d[200];
  for (uint16_t s = 1; s <= TERN__FRAG_GATE_STARTS; s++) {
    size_t n = put_fragment(d, put_header(d), 0, 0, s, 2000, 10);
    cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 1, "start %u", s);
  }
  size_t n = put_fragment(d, put_header(d), 0, 0, 100, 2000, 10);
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 0, "a fifth reassembly");
  /* The same sequence on another channel, or unreliable, is another one. */
  n = put_fragment(d, put_header(d), 1, 0, 1, 2000, 10);
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 0);
}

Test(fraggate, every_fragment_of_a_datagram_is_read_and_parsing_stops_where_enet_does) {
  uint8_t d[400];
  size_t at = put_header(d);
  /* A reliable send, a ping, then a fragment over the limit. */
  ENetProtocolSendReliable sr;
  memset(&sr, 0, sizeof(sr));
  sr.header.command = ENET_PROTOCOL_COMMAND_SEND_RELIABLE;
  sr.dataLength = ENET_HOST_TO_NET_16(20);
  memcpy(d + at, &sr, sizeof(sr));
  at += sizeof(sr) + 20;
  ENetProtocolPing ping;
  memset(&ping, 0, sizeof(ping));
  ping.header.command = ENET_PROTOCOL_COMMAND_PING;
  memcpy(d + at, &ping, sizeof(ping));
  at += sizeof(ping);
  size_t n = put_fragment(d, at, 0, 0, 7, 1u << 20, 10);
  tern__frag_gate g;
  memset(&g, 0, sizeof(g));
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 0, "the third command is read");
  /* A reliable send whose data runs past the datagram: ENet stops there,
   * so the fragment after it is never handled, and the gate lets it be. */
  sr.dataLength = ENET_HOST_TO_NET_16(1000);
  memcpy(d + 4, &sr, sizeof(sr));
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 1);
  /* A fragment whose data runs past the end is refused by ENet itself. */
  n = put_fragment(d, put_header(d), 0, 0, 7, 1u << 20, 10) - 5;
  cr_assert_eq(tern__frag_gate_pass(&g, d, n, 2146), 1);
  cr_assert_eq(g.starts, 0);
}
