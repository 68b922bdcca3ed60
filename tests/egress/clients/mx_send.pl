#!/usr/bin/perl
# A direct-to-MX sender in Perl: connect, banner, EHLO, QUIT (IPv4 and IPv6).
use strict; use warnings; use IO::Socket::IP; use Errno qw(ECONNREFUSED);
my ($host, $port) = @ARGV;
my $s = IO::Socket::IP->new(PeerHost => $host, PeerPort => $port, Proto => 'tcp', Timeout => 5);
if (!$s) {
    my $r = ($! == ECONNREFUSED) ? "refused" : "error:$@";
    print "{\"pid\": $$, \"result\": \"$r\"}\n"; exit 0;
}
my $banner = <$s>;
print $s "EHLO perl.example\r\n";
while (my $l = <$s>) { last if substr($l, 3, 1) ne '-'; }
print $s "QUIT\r\n"; my $bye = <$s>; close $s;
print "{\"pid\": $$, \"result\": \"ok:" . substr($banner, 0, 3) . "\"}\n";
